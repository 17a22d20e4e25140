"""Devices: a self-contained board bundle (bundle.py) with edgetune/runner.py copied in as run_device.py;
`edgetune bench --ssh` (ssh.py: the flow; transport.py: the system ssh/scp; probe.py: what the board has;
golden.py: its golden cases' verdict); `bench --adb` on a phone (android.py); device results in a run (results.py)."""
