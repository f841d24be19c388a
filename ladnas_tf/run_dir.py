"""What every run directory shares: its JSON files written atomically, so that a kill leaves the old
file or the new one, never half of either."""
import json
import os


def write_json(path, payload):
    temp = path + '.tmp'
    with open(temp, 'w') as f:
        json.dump(payload, f, indent=2)
        f.write('\n')
    os.replace(temp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)
