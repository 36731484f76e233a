/**
 * A short TinyStories-style story (written for this project, public domain):
 * the text `tinyq perplexity` and `tinyq demo` score when no `--text` is
 * given. The same text is `tests/fixtures/models/tinystories_paragraph.txt`,
 * whose perplexity under transformers the tests pin.
 *
 * @module
 */

/** The story. */
export const SAMPLE_STORY: string =
  'Once upon a time, there was a little boy named Tim. Tim had a small red car. He loved to play with his car every day. One day, Tim went to the park with his mom. The sun was warm and the sky was blue.\n\nAt the park, Tim saw a big tree. Under the tree, there was a sad cat. The cat could not find its home. Tim wanted to help the cat. He said, "Do not be sad, little cat. I will help you."\n\nTim and his mom walked around the park with the cat. They looked for a house with a red door. Soon, they saw a girl named Sue. Sue was crying. When she saw the cat, she smiled and ran to them. "That is my cat!" she said. "Thank you for finding her!"\n\nTim felt happy. He learned that it is good to help others. Sue and Tim became friends, and they played together in the park until the sun went down.\n\nThe next day, Sue came to Tim\'s house with a big box. "Open it!" she said. Tim opened the box and found a new ball. It was blue and shiny. Tim said, "Thank you, Sue!" They went outside and kicked the ball high into the sky. The cat sat on the grass and watched them play.\n';
