"""Packaging by concern: the on-device graph (graph.py), the typed manifest (manifest.py), checking a
package (check.py) and installing it into the Android app (app.py). The package stages (edgetune/stages/package.py)
and the Linux device bundles (edgetune/device/bundle.py) build on these."""
