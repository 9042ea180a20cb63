# Generated package marker; see libs/api/generate.py.
