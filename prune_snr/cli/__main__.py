"""``python -m prune_snr.cli``: the ``prune-snr`` command."""

from . import main

main()
