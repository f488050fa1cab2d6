DROP TABLE attachments;
DROP TABLE notes;
