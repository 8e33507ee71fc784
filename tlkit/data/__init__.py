"""Course datasets: splits (shared helpers), one module per dataset (animals, elpv, tweets, reviews, keywords, fsdd,
images and sentiment for the online options), and folders (your own images, audio or CSV texts)."""
