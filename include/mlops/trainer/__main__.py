"""``python -m mlops.trainer``: the trainer image's entrypoint."""

import sys

from mlops.trainer.cli import main

sys.exit(main())
