"""The report of ``fpe study choices`` (placeholder until the tables are written)."""


def report(study_dir, out_dir):
    return []
