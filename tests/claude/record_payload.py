"""A hook that appends the payload it is given, as one line, to the file named by argv[1]."""

import json
import sys

payload = json.load(sys.stdin)
with open(sys.argv[1], "a", encoding="utf-8") as out:
    out.write(json.dumps(payload) + "\n")
