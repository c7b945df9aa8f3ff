"""The error raised for bad or missing data (kept free of heavy imports)."""


class DataError(ValueError):
  """Bad or missing data (an archive, an image, a label), named with its path or split and what was expected."""
