"""The XDS metadata model (ITI TF-3 §4.2-4.3): object model, ebRIM 3.0 codec, HL7 v2 types, validation, vocabulary."""
