"""Article sources: a folder of article files and RSS/Atom feeds. Each returns ``Article``s."""
