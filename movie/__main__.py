from grpckit.lifecycle.main import main
from movie.server import PROGRAM

raise SystemExit(main(PROGRAM))
