from movie.server import serve

raise SystemExit(serve())
