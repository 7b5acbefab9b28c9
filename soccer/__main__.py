from grpckit.lifecycle.main import main
from soccer.server import PROGRAM

raise SystemExit(main(PROGRAM))
