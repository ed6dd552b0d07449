"""Document Repository actor: ITI-41 Provide and Register, ITI-43 Retrieve, ITI-86 Remove."""
