"""One thin module per DVC stage; the only code that talks to Ray Tune and MLflow."""
