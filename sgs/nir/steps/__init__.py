"""The NIR processing steps: each module has a pure function over arrays and a ``main`` console script."""
