/**
 * Error types shared by every room. Each message names the failed action, the
 * input (file, tensor, layer) and what was wrong, so a user can act on it.
 *
 * @module
 */

/** A file or byte stream is not what its format promises (bad header, truncated, out-of-range offsets). */
export class FormatError extends Error {
  /** Where the bad input came from: a path, URL or blob name. */
  readonly source: string;
  /**
   * Make a FormatError; the message is prefixed with the source.
   * @param source the path, URL or blob name
   * @param message what is wrong, and where in the input
   */
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = "FormatError";
    this.source = source;
  }
}

/** A matrix or tensor has the wrong shape for the operation asked of it. */
export class ShapeError extends Error {
  /**
   * Make a ShapeError.
   * @param message the operation, the shapes given and the shapes expected
   */
  constructor(message: string) {
    super(message);
    this.name = "ShapeError";
  }
}

/** Values that cannot be computed with: NaN/Inf inputs, a Gram matrix that damping could not repair. */
export class NumericError extends Error {
  /**
   * Make a NumericError.
   * @param message what was non-finite or singular, and where
   */
  constructor(message: string) {
    super(message);
    this.name = "NumericError";
  }
}

/** An option given by the user is out of range or inconsistent (a ratio outside (0, 1), a rank that saves nothing). */
export class OptionError extends Error {
  /**
   * Make an OptionError.
   * @param message which option, the value given and the range accepted
   */
  constructor(message: string) {
    super(message);
    this.name = "OptionError";
  }
}
