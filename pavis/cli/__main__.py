"""``python -m pavis.cli``: the same application as the ``pavctl`` console script."""

from pavis.cli import main

main()
