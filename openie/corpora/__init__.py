"""Small corpus samples that ship inside openie, so the first run needs nothing outside PyPI.

Each folder holds its licence and a README naming the source; ``openie.datasets`` registers them.
"""
