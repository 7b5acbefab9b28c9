from cheese.server import PROGRAM
from grpckit.main import main

raise SystemExit(main(PROGRAM))
