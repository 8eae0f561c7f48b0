from quicktrain.cli import entry

entry()
