from cheese.server import PROGRAM
from grpckit.lifecycle.main import main

raise SystemExit(main(PROGRAM))
