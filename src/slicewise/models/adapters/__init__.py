"""One module per model family; each imports its heavy library only when it is used."""
