"""`python -m edgetune`: the edgetune command, as launchers start it (`torchrun ... -m edgetune build RECIPE`,
`accelerate launch -m edgetune build RECIPE`)."""

from edgetune.cli import main

main()
