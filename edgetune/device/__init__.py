"""Linux boards: a self-contained bundle (bundle.py) with its runner (runner.py, copied in as run_device.py), the
ssh driver of `edgetune bench --ssh` (ssh.py) and the device results kept in a run directory (results.py)."""
