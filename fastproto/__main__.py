from fastproto.cli import main

raise SystemExit(main())
