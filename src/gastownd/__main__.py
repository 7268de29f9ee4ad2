from gastownd.process.command import main

raise SystemExit(main())
