"""PYTHONPATH=scripts python -m gpucheck"""

from .cli import main

raise SystemExit(main())
