"""bneck stages 2 and 3 and the command line. Imports ``features``; never the reverse."""
