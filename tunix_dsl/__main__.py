from tunix_dsl.cli import main

raise SystemExit(main())
