"""Configs shipped inside the package (the embedded default lives here so that
``xnn train`` works from any directory after ``pip install``)."""
