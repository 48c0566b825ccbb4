"""`sgs dev`: the real parts (PostgreSQL, NATS, MinIO, Kubernetes, Slurm) run detached for humans."""
