"""Restore validation: the checks, the verdict against RTO and RPO, the pipeline, PITR and the report."""
