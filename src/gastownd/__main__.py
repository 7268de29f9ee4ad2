from gastownd.cli import main

raise SystemExit(main())
