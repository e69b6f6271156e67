"""Reading acquisitions and making data: image I/O, pairing, normalisation, training patches, the demo simulator."""
