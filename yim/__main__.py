from yim.cli import main

raise SystemExit(main())
