from miniupi.cli import main

raise SystemExit(main())
