# Backdoor Attacks, from Math to Code: build, test and check the book.
#
#   make book         set up .venv if needed, then build the HTML book into _build/html
#   make test         set up .venv if needed, then run the test suite
#   make check-site   browser checks of the built site (needs `make book` first)
#   make bench        run the benchmarks in benchmarks/ and print their tables
#   make notebooks    write every chapter's student and instructor notebook into _build/html/notebooks

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUILD := _build
LIB_HASH := $(BUILD)/.lib-hash
SHELL := /bin/bash

.PHONY: book test check-site bench notebooks env clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[book,test,peers]'
	touch $(STAMP)

# Jupyter Book's execution cache keys on the code cells only: when lib/ changed since the
# last build, drop the executed notebooks so that no page shows outputs of old code.
book: $(STAMP)
	@mkdir -p $(BUILD)
	@new=$$(find lib -name '*.py' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64); \
	 old=$$(cat $(LIB_HASH) 2>/dev/null); \
	 if [ "$$new" != "$$old" ]; then \
	   echo "lib/ changed since the last build: clearing the execution cache"; \
	   rm -rf $(BUILD)/.jupyter_cache $(BUILD)/jupyter_execute; \
	 fi; \
	 $(BIN)/jupyter-book build . --all -W -n --keep-going && echo "$$new" > $(LIB_HASH)
	@$(MAKE) --no-print-directory notebooks

# The teaching kit's Sphinx extension (book/_ext/teaching_kit.py) writes the notebooks during
# the build as well; this target rewrites them from the chapters' sources without a rebuild.
notebooks: $(STAMP)
	$(BIN)/python book/_ext/teaching_kit.py

test: $(STAMP)
	$(BIN)/python -m pytest -m "not site and not book" ; \
	 status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

check-site: $(STAMP)
	$(BIN)/python -m pytest -m "site or book" tests/test_site.py tests/test_book.py ; \
	 status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

bench: $(STAMP)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

clean:
	rm -rf $(BUILD)
