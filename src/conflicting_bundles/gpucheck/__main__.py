"""python -m conflicting_bundles.gpucheck"""

from .cli import main

raise SystemExit(main())
