from inferbridge.cli import main

raise SystemExit(main())
