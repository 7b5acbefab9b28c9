from soccer.server import serve

raise SystemExit(serve())
