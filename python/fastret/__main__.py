from fastret.cli import main

raise SystemExit(main())
