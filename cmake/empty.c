/* placeholder for a module with no sources yet */
typedef int hearth_empty_translation_unit;
