"""The cluster file: YAML in, a typed and immutable ClusterSpec out.

parse.py reads the YAML text (ruamel), model.py is the spec (pydantic), load.py joins them
and explain.py/locate.py turn validation errors into file:line messages. Nothing is imported
here, so that reading an applied spec (JSON, model only) does not load the YAML parser."""
