"""Studies: one question from the field each, reproduced end to end (`python -m bench study NAME`)."""
