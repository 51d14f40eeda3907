"""The cluster file: YAML in, a typed and immutable ClusterSpec out.

parse.py reads the YAML text (ruamel), model.py is the spec (pydantic), kinds.py is what
each provider kind adds to it (handed in by the provider registry), load.py joins them
and explain.py/locate.py turn validation errors into file:line messages. Nothing is imported
here, so that reading an applied spec (JSON, model only) does not load the YAML parser."""
