"""The embedded demo (`sgs demo`): a small survey through placement, the local executor and the archive."""
