from cheese.server import serve

raise SystemExit(serve())
