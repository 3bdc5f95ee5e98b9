"""Search: search spaces, Ray Tune + Optuna (seeded TPE) + ASHA, and the study driver."""
