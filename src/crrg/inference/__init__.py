"""Running a trained generator over many studies: input collection, sharding, resumable output."""
