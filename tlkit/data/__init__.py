"""Course datasets: splits (shared helpers) and one module per default dataset (animals, tweets, keywords, fsdd)."""
