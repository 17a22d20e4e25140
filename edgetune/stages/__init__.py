"""One module per stage, each with one public function; pipeline.py wires them."""
