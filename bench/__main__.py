"""python -m bench --help"""

from bench.run import main

raise SystemExit(main())
